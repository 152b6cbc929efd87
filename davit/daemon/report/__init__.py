"""`davit report`: a run, or a job's recent runs, as one self-contained HTML page (inline SVG and
CSS, no script, no network). `picture` gathers what to draw from the log's events, `trends`
does so across a job's runs, `svg` and `page` render it, escaping every string taken from the log."""
