"""The framework: stage contract, runners, run store, step runner, ids, media, table schemas and step names."""
