# cpa — the two commands are `make run` (pipeline + UI) and `make test`; both set everything up.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LANDING := $(or $(CPA_LANDING_DIR),datalake/landing)
JAVA17 := $(firstword $(wildcard /usr/lib/jvm/java-17-openjdk-amd64 /usr/lib/jvm/java-17-openjdk* /usr/lib/jvm/temurin-17*))

export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
# Spark 4 and Cassandra 5.0 both run on Java 17; the machine may default to another JDK.
export JAVA_HOME := $(or $(CPA_JAVA_HOME),$(JAVA17),$(JAVA_HOME))
export CPA_JAVA_HOME := $(JAVA_HOME)
export PATH := $(JAVA_HOME)/bin:$(PATH)
# Read by every Dagster process of the instance (see cpa_resources/local_postgres.py INSTANCE_ENV).
export DAGSTER_EVENT_BATCH_SIZE ?= 1000
export DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS ?= 1

.PHONY: setup run test bench bench-freshness bench-scale bench-merge bench-faults bench-idle stop cassandra-stop cluster-start cluster-stop cluster-status clean

# The servers every command needs: Cassandra (serving tables) and PostgreSQL (the Dagster instance).
setup: $(STAMP)
	@mkdir -p $(DAGSTER_HOME)
	@$(BIN)/cpa cassandra start
	@$(BIN)/cpa postgres start

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found"; exit 1; }
	@command -v mvn >/dev/null || { echo "mvn not found (needed to install Apache Cassandra)"; exit 1; }
	@[ -n "$(JAVA_HOME)" ] || { echo "no JDK 17 found: set CPA_JAVA_HOME"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $(STAMP)

# Unless CPA_SPARK_MASTER or CPA_SPARK_REMOTE names another Spark: start the warm local Spark
# Connect server and point the commands after it (in the same shell line) at it.
WARM_SPARK = if [ -z "$$CPA_SPARK_MASTER$$CPA_SPARK_REMOTE" ]; then $(BIN)/cpa spark start && \
	export CPA_SPARK_REMOTE=sc://127.0.0.1:$${CPA_SPARK_CONNECT_PORT:-15002}; fi

# Generated data ends today, so the stream looks live; `cpa calendar` fits the partitions to the
# landing data's dates (a variable set by hand wins) for the backfill and the UI alike. Every run
# talks to a warm local Spark Connect server, unless CPA_SPARK_MASTER or CPA_SPARK_REMOTE names
# another Spark.
run: setup
	@if [ -z "$$(ls -A $(LANDING)/usage_events_stream 2>/dev/null)" ]; then \
		$(BIN)/cpa generate --out $(LANDING) --scale 1 --seed 7 --end $$(date -u +%F) --force; fi
	$(WARM_SPARK) && eval "$$($(BIN)/cpa calendar)" && \
		$(BIN)/cpa backfill && $(BIN)/dg dev --host 127.0.0.1 --port 3000

# Stops the local servers `make run` started (Spark Connect, PostgreSQL, Cassandra).
stop:
	@$(BIN)/cpa spark stop
	@$(BIN)/cpa postgres stop
	@$(BIN)/cpa cassandra stop

test: setup
	$(BIN)/pytest -q

bench: setup
	$(BIN)/python bench/backfill.py

# Files delivered one every 15 s on top of the course dataset.
bench-freshness: setup
	$(BIN)/python bench/freshness.py --files 5 --rate 4

# 1×, 10× and 100× generated data: backfill time, events/s, peak memory, then freshness of 5 files.
bench-scale: setup
	$(BIN)/python bench/scale.py

# The daily mart's MERGE on a synthetic mart of the 100× size (1.3 M cells): rewriting files against
# deletion vectors (on the warm Spark Connect server, as stream runs do, unless another Spark is set).
bench-merge: setup
	$(WARM_SPARK) && $(BIN)/python bench/mart_merge.py

bench-faults: setup
	$(BIN)/python bench/faults.py

bench-idle: setup
	$(BIN)/python bench/idle.py

cassandra-stop:
	@$(BIN)/cpa cassandra stop

# A Spark master with two workers and a 3-node Cassandra cluster on loopback (CPA_CLUSTER_HOSTS).
cluster-start: $(STAMP)
	@$(BIN)/cpa cluster start

cluster-stop:
	@$(BIN)/cpa cluster stop

cluster-status:
	@$(BIN)/cpa cluster status

clean:
	rm -rf datalake/bronze/* datalake/silver/* datalake/gold/*
	find .dagster_home -mindepth 1 -maxdepth 1 ! -name dagster.yaml -exec rm -rf {} +
