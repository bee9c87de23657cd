"""Every Prometheus metric of the worker, created against a replaceable registry.

Labels are bounded: topic short names, event types, reasons, milestone kinds,
alert scopes and severities, channels, GMV kinds and leaderboard ranks (1-10).
Per-brand detail lives in Redis, never in Prometheus: brand ids are no label.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Batches run from one record to PRESALE_BATCH_MAX_RECORDS (40,000 by default).
_BATCH_SIZES = (1, 10, 100, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000)
# A batch should take well under the 1 s freshness budget.
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    records_in: Counter
    rejected: Counter
    out_of_window: Counter
    late: Counter
    duplicates: Counter
    milestones: Counter
    alerts: Counter
    gmv_fen: Gauge
    channel_gmv_fen: Gauge
    channel_vs_last_year: Gauge
    region_gmv_fen: Gauge
    top_brand_gmv_fen: Gauge
    brands_reached: Gauge
    brands_doubled: Gauge
    distinct_ids: Gauge
    distinct_ids_limit: Gauge
    consumer_lag: Gauge
    freshness: Gauge
    batch_records: Histogram
    batch_seconds: Histogram
    redis_seconds: Histogram
    stale_plans: Counter
    offset_gaps: Counter
    store_went_back: Counter
    outbox_published: Counter
    retries: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> Metrics:
        r = registry if registry is not None else CollectorRegistry()
        return cls(
            registry=r,
            records_in=Counter(
                "presale_records_in_total",
                "Input records read, by topic and event type (invalid: rejected).",
                ["topic", "type"],
                registry=r,
            ),
            rejected=Counter(
                "presale_records_rejected_total",
                "Input records sent to the dead-letter topic, by reason.",
                ["reason"],
                registry=r,
            ),
            out_of_window=Counter(
                "presale_records_out_of_window_total",
                "Valid events outside the campaign window, not counted.",
                registry=r,
            ),
            late=Counter(
                "presale_late_records_total",
                "Clicks and carts more than the dedupe horizon behind the "
                "event-time watermark: not counted (docs/exactly-once.md).",
                registry=r,
            ),
            duplicates=Counter(
                "presale_duplicates_total",
                "Events recognised as already counted (same event_id or order_id).",
                registry=r,
            ),
            milestones=Counter(
                "presale_milestones_total",
                "First-hour milestones reached, by kind.",
                ["kind"],
                registry=r,
            ),
            alerts=Counter(
                "presale_alerts_total",
                "Surge alerts raised, by scope (brand, channel, room, "
                "flash_sale_orders) and severity (warning, critical).",
                ["scope", "severity"],
                registry=r,
            ),
            # The campaign's GMV is read from Redis (streams/live.py), so every
            # worker shows the same exact level, restarts included: gauges.
            gmv_fen=Gauge(
                "presale_gmv_fen",
                "Campaign GMV in fen, by kind (gross, net, first_hour_gross).",
                ["kind"],
                registry=r,
            ),
            channel_gmv_fen=Gauge(
                "presale_channel_gross_gmv_fen",
                "Campaign gross GMV in fen, by channel.",
                ["channel"],
                registry=r,
            ),
            channel_vs_last_year=Gauge(
                "presale_channel_first_hour_vs_last_year_ratio",
                "A channel's first-hour clicks, orders or gross GMV over last"
                " year's (PRESALE_CHANNEL_BASELINE_CSV); unset where last year's"
                " is 0.",
                ["channel", "measure"],
                registry=r,
            ),
            region_gmv_fen=Gauge(
                "presale_region_gross_gmv_fen",
                "Campaign gross GMV in fen, by region (at most PRESALE_MAX_REGIONS"
                " regions, then `other`).",
                ["region"],
                registry=r,
            ),
            top_brand_gmv_fen=Gauge(
                "presale_top_brand_gross_gmv_fen",
                "Gross GMV in fen of the brand at each leaderboard rank (1-10); "
                "the brand names are on the live page.",
                ["rank"],
                registry=r,
            ),
            brands_reached=Gauge(
                "presale_first_hour_brands_reached",
                "Brands whose first-hour gross GMV reached each threshold (fen).",
                ["threshold_fen"],
                registry=r,
            ),
            brands_doubled=Gauge(
                "presale_first_hour_brands_doubled",
                "Brands whose first-hour gross GMV reached twice last year's.",
                registry=r,
            ),
            distinct_ids=Gauge(
                "presale_distinct_ids",
                "Distinct ids the campaign has counted, by kind: brands (exact) "
                "and livestream rooms (HyperLogLog, within 1%).",
                ["kind"],
                registry=r,
            ),
            distinct_ids_limit=Gauge(
                "presale_max_distinct_ids",
                "PRESALE_MAX_BRANDS and PRESALE_MAX_ROOMS, by kind: the alert "
                "PresaleTooManyIds fires above them.",
                ["kind"],
                registry=r,
            ),
            consumer_lag=Gauge(
                "presale_consumer_lag_records",
                "Input records published but not yet applied, by topic.",
                ["topic"],
                registry=r,
            ),
            freshness=Gauge(
                "presale_freshness_seconds",
                "Wall clock minus the event time of the latest applied event.",
                registry=r,
            ),
            batch_records=Histogram(
                "presale_batch_records",
                "Records per applied batch.",
                buckets=_BATCH_SIZES,
                registry=r,
            ),
            batch_seconds=Histogram(
                "presale_batch_duration_seconds",
                "Time to decode, plan and apply one batch.",
                buckets=_SECONDS,
                registry=r,
            ),
            redis_seconds=Histogram(
                "presale_redis_roundtrip_seconds",
                "Time of the atomic Redis step of one batch.",
                buckets=_SECONDS,
                registry=r,
            ),
            stale_plans=Counter(
                "presale_stale_batches_total",
                "Batches refused because another worker had moved the offsets.",
                registry=r,
            ),
            offset_gaps=Counter(
                "presale_offset_gaps_total",
                "Batches whose records began past the next offset to apply, "
                "by topic: re-read from there.",
                ["topic"],
                registry=r,
            ),
            store_went_back=Counter(
                "presale_store_went_back_total",
                "Partitions found by the lag timer with a Redis offset below what "
                "the worker had applied (Redis lost writes), by topic: re-read.",
                ["topic"],
                registry=r,
            ),
            outbox_published=Counter(
                "presale_outbox_published_total",
                "Milestone and alert records published to Kafka, by topic.",
                ["topic"],
                registry=r,
            ),
            retries=Counter(
                "presale_batch_retries_total",
                "Batches retried because Redis or Kafka was unavailable, by which.",
                ["service"],
                registry=r,
            ),
        )
