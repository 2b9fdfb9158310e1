"""The review web app: `conceptengine review serve RUN` (see API.md for the HTTP API)."""
