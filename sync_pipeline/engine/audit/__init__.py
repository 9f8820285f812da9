"""What the engine wrote down: SchedulerLog rows per call and the queries that read them back."""
