"""Value sets and constants of the data contract (CONTRACT.md §1–§2), named once."""

UNIT_BY_METRIC = {"requests": "count", "cpu_hours": "hours", "storage_gb_hours": "gb_hours"}

SERVICES = ("compute", "storage", "database", "networking", "analytics", "genai")
REGIONS = ("us-east", "us-west", "eu-west", "eu-central", "ap-south", "ap-northeast", "sa-east")

# EV-05: a small negative increment is a rounding correction; below this it is a defect.
MIN_COST_INCREMENT = -0.01
