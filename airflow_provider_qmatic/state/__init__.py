"""Where state lives between requests, threads, processes and hosts."""
