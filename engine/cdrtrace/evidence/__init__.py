"""Evidence: what a trace proves, who may read it, and for how long.

outcomes (the rules' outcomes and the customer's view), traces (resolving and recording
a *57), activations (traces a switch recorded), rows (columnar report rows), directory
(subscriber enrichment), audit (the hash-chained log), disclosure (the CIC's audited
reads, release under legal authority), cases, retention.
"""
