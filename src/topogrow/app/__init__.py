"""The application: tasks and data, experiment runners, reports and plots, the CLI."""
