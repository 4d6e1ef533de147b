"""Tool names the server knows. Agents allow-list a subset; the worker's dispatcher enforces it."""

FILE_READ = "file_read"
SEARCH = "search"
KNOWN_TOOLS = (FILE_READ, SEARCH)
