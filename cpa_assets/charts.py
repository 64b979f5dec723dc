"""Small PNG charts of the marts, for asset pages (markdown metadata) and `cpa report`.

Each chart function takes a pandas frame and returns PNG bytes; `markdown_image` embeds them in
markdown as a data URI, which the Dagster UI renders and a browser shows without any file."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd

SIZE = (9, 3.6)
DPI = 80
DETECTOR_STYLE = {
    "is_anomaly_zscore": ("z-score > 8", "o", "tab:orange"),
    "is_anomaly_mad": ("robust z > 10", "x", "tab:red"),
    "is_anomaly_p99": ("cost > 1.5 × p99", "^", "tab:purple"),
}


def _axes(right: float = 0.98):
    """A figure and its axes with fixed margins: laying out to fit (tight_layout) draws the figure
    an extra time, which costs as much as the PNG itself. A figure of its own, rendered to memory
    by Agg, outside pyplot's global state: a step may draw one while another thread draws another."""
    # matplotlib is imported when a chart is drawn: a stream run's process, which draws none, starts
    # 0.2 s sooner.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=SIZE)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    fig.subplots_adjust(left=0.09, right=right, top=0.9, bottom=0.14)
    return fig, ax


def _dates_on_x(ax) -> None:
    """Short date labels that do not overlap (07-15 … Aug … 08-15)."""
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(maxticks=10)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _empty(title: str) -> bytes:
    fig, ax = _axes()
    ax.set_title(title)
    ax.text(0.5, 0.5, "no rows", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return _png(fig)


def markdown_image(png: bytes, title: str) -> str:
    return f"![{title}](data:image/png;base64,{base64.b64encode(png).decode()})"


def daily_cost_per_service(daily: pd.DataFrame, title: str = "P1 daily cost per service (USD)") -> bytes:
    """Lines of daily_cost_usd summed per service and usage_date (the P1 mart's rows)."""
    if daily.empty:
        return _empty(title)
    table = daily.assign(usage_date=pd.to_datetime(daily["usage_date"])).pivot_table(
        index="usage_date", columns="service", values="daily_cost_usd", aggfunc="sum"
    )
    fig, ax = _axes()
    for service in table.columns:
        ax.plot(table.index, table[service], linewidth=1.5, label=service)
    _dates_on_x(ax)
    ax.set_title(title)
    ax.set_xlabel("usage_date")
    ax.set_ylabel("USD")
    ax.legend(ncol=3, fontsize="small")
    ax.grid(alpha=0.3)
    return _png(fig)


def cost_with_anomalies(cells: pd.DataFrame, title: str = "P6 daily cost of every org × service, anomalies flagged") -> bytes:
    """Each org × service × day's cost (grey), the flagged cells marked per detector (log scale)."""
    if cells.empty:
        return _empty(title)
    cells = cells.assign(usage_date=pd.to_datetime(cells["usage_date"]))
    fig, ax = _axes(right=0.74)
    positive = cells[cells["daily_cost_usd"] > 0]
    ax.scatter(positive["usage_date"], positive["daily_cost_usd"], s=3, color="lightgrey", label="judged cells")
    for flag, (label, marker, colour) in DETECTOR_STYLE.items():
        hits = positive[positive[flag].astype(bool)]
        ax.scatter(hits["usage_date"], hits["daily_cost_usd"], s=36, marker=marker, color=colour,
                   label=f"{label} ({len(hits)})")
    ax.set_yscale("log")
    _dates_on_x(ax)
    ax.set_title(title)
    ax.set_xlabel("usage_date")
    ax.set_ylabel("daily_cost_usd (log)")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(alpha=0.3)
    return _png(fig)


def quarantine_by_rule(counts: pd.DataFrame, title: str = "Quarantined usage events per day, by rule") -> bytes:
    """Stacked bars of quarantined rows per event_date and dq_rule (columns event_date, dq_rule, rows)."""
    if counts.empty or counts["rows"].sum() == 0:
        return _empty(title)
    table = counts.pivot_table(index="event_date", columns="dq_rule", values="rows", aggfunc="sum", fill_value=0)
    table.index = pd.to_datetime(table.index).strftime("%m-%d")
    fig, ax = _axes()
    # One filled step outline per rule over the days (day i spans i-0.5 … i+0.5), stacked: the
    # look of stacked bars at a fraction of the cost (one patch per rule, not one per day and rule).
    edges = np.arange(len(table) + 1) - 0.5
    bottom = np.zeros(len(table))
    for rule in table.columns:
        top = bottom + table[rule].to_numpy()
        ax.stairs(top, edges, baseline=bottom, fill=True, label=rule)
        bottom = top
    ax.legend(title="dq_rule", fontsize="small")
    ax.set_title(title)
    ax.set_xlabel("event_date")
    ax.set_ylabel("rows")
    step = max(1, len(table) // 15)
    ax.set_xticks(range(0, len(table), step), table.index[::step], rotation=0, fontsize="small")
    ax.grid(alpha=0.3, axis="y")
    return _png(fig)


def line_chart(frame: pd.DataFrame, x: str, columns: list[str], title: str, ylabel: str) -> bytes:
    """One line per column over x (for the report's per-day totals)."""
    if frame.empty:
        return _empty(title)
    data = frame.assign(**{x: pd.to_datetime(frame[x])}).set_index(x)[columns]
    fig, ax = _axes()
    for column in columns:
        ax.plot(data.index, data[column], linewidth=1.5, label=column)
    _dates_on_x(ax)
    ax.legend(fontsize="small")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return _png(fig)


def bar_chart(frame: pd.DataFrame, x: str, y: str, title: str, ylabel: str) -> bytes:
    if frame.empty:
        return _empty(title)
    fig, ax = _axes()
    ax.bar(frame[x].astype(str), frame[y])
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
    return _png(fig)
