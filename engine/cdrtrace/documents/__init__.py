"""Printable documents: the customer's trace log and the guide (PDF with fpdf2, and
HTML). The customer's documents are built from the customer's view only: they cannot
hold a caller's number, name or address."""
