"""The trial report's figures (issue 15 part 3): typed records in, figures out, no I/O and no HTML.

``records`` parses the audit log's records once; ``figures`` computes per device and per
trial; ``export`` writes the same figures as JSON and CSV text. The HTML and its charts
are han_ota/report_html.py's (presentation, with matplotlib, which the daemon never loads).
"""
