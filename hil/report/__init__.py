"""The run record: journal, run directories, summary and report files (results.json, junit.xml, metrics.txt,
index.html), regression comparison against a reference run, and history."""
