"""The application: the command line, the compress job, its run directory and report."""
