"""The round's steps, one per file and named after the step, with the run context, its sources and the driver."""
