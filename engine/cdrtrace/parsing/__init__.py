"""Parsing: switch CDR bytes into canonical call columns.

formats (the canonical record and the switch layouts), parsers (format detection,
headers, parsers by name), the native core (`_parse`, from ext/_parse.pyx) and its
pure-Python reference twin (reference), numbers, time zones, and salvage (what a
rejected record still tells, so a trace fails closed).
"""
