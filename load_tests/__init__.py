"""Load tests: locust users that drive the DatabaseService in process, and a demo HTTP app."""
