"""Generated switch traffic for tests, benchmarks and the demo.

traffic (calls drawn with a realistic rhythm and mix, planted harassment campaigns and
their truth; write) and writers (the calls as each switch's CDR bytes).
"""
from .traffic import AREAS, CALLER_AREAS, FIRST, LAST, generate, generate_chunks, write
from .writers import (
    BROADWORKS_FIELDS,
    CUCM_FIELDS,
    CUCM_INTEGERS,
    KAMAILIO_DBTEXT_HEADER,
    add_legs_and_unreadable,
    broadworks_header,
    cucm_header,
    format_asterisk,
    format_asterisk_custom,
    format_broadworks,
    format_cucm,
    format_freeswitch,
    format_kamailio,
    format_kamailio_acc,
    format_kamailio_dbtext,
)

__all__ = ["AREAS", "CALLER_AREAS", "FIRST", "LAST", "generate", "generate_chunks", "write",
           "BROADWORKS_FIELDS", "CUCM_FIELDS", "CUCM_INTEGERS", "KAMAILIO_DBTEXT_HEADER",
           "add_legs_and_unreadable",
           "broadworks_header", "cucm_header", "format_asterisk", "format_asterisk_custom",
           "format_broadworks", "format_cucm", "format_freeswitch", "format_kamailio",
           "format_kamailio_acc", "format_kamailio_dbtext"]
