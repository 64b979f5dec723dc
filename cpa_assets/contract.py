"""Value sets and constants of the data contract (CONTRACT.md §1–§2), named once: silver flags a
value outside its set (DM-02) and the generator draws from the same sets."""

UNIT_BY_METRIC = {"requests": "count", "cpu_hours": "hours", "storage_gb_hours": "gb_hours"}

# The documented values of each categorical column, as the course dataset holds them (most
# frequent first).
INDUSTRIES = ("Gaming", "Education", "Manufacturing", "Retail", "Government", "Healthcare", "Fintech",
              "E-commerce", "Energy", "Media")
REGIONS = ("ap-northeast", "us-east", "us-west", "sa-east", "ap-south", "eu-west", "eu-central")
PLAN_TIERS = ("standard", "pro", "enterprise", "free")
SALES_REPS = ("rep_a", "rep_b", "rep_c", "rep_d", "rep_e")
LIFECYCLE_STAGES = ("active", "at_risk", "churned", "prospect", "lead")
MARKETING_SOURCES = ("event", "organic", "partner", "ads", "referral")
ROLES = ("data_engineer", "devops", "developer", "analyst", "ml_engineer", "admin")
SERVICES = ("compute", "storage", "database", "networking", "analytics", "genai")
RESOURCE_STATES = ("running", "stopped", "terminated")
CURRENCIES = ("USD", "ARS", "EUR")
TICKET_CATEGORIES = ("integration", "billing", "availability", "usability", "performance", "security")
SEVERITIES = ("low", "medium", "high", "critical")
CAMPAIGNS = ("upgrade_enterprise", "webinar_finops", "genai_launch", "welcome", "upgrade_pro", "security_week")
CHANNELS = ("event", "email", "ads", "in_app")

# Each categorical column with its set (DM-02).
DOCUMENTED_VALUES = {
    "industry": INDUSTRIES, "hq_region": REGIONS, "plan_tier": PLAN_TIERS, "sales_rep": SALES_REPS,
    "lifecycle_stage": LIFECYCLE_STAGES, "marketing_source": MARKETING_SOURCES, "role": ROLES,
    "service": SERVICES, "region": REGIONS, "state": RESOURCE_STATES, "currency": CURRENCIES,
    "category": TICKET_CATEGORIES, "severity": SEVERITIES, "campaign": CAMPAIGNS, "channel": CHANNELS,
    "metric": tuple(UNIT_BY_METRIC), "unit": tuple(UNIT_BY_METRIC.values()),
}

# EV-05: a small negative increment is a rounding correction; below this it is a defect.
MIN_COST_INCREMENT = -0.01
