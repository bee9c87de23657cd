"""Pure presale domain logic: events, counters, milestones, surge detection."""
