"""Reports: schema (versioned), rundir (every file of a run folder), render (Markdown, HTML), plots, table, findings."""
