"""The pure helpers of Broadcast Chat, in one place: text safety and names,
line framing, commands and flood control, the wire format, addresses, and
clients.json's JSON reading and writing. No sockets, no threads.

They live in the broadcast_chat package, one module per concern; this
module gathers them for scripts and tests that want them all.
"""

from broadcast_chat import __version__  # noqa: F401
from broadcast_chat.jsonfile import iso_utc, read_json, write_json_atomic  # noqa: F401
from broadcast_chat.net import address_group, format_address, is_loopback  # noqa: F401
from broadcast_chat.protocol import (COMMAND_USAGE, HELP_LINES, Action, LineFramer,  # noqa: F401
                                     Say, TokenBucket, classify, count_lines, first_lines,
                                     interpret, interpret_lines)
from broadcast_chat.names import (NAME_MAX, RESERVED_NAMES, check_name,  # noqa: F401
                                  name_from_hostname, name_key, name_keys, name_variant,
                                  names_clash)
from broadcast_chat.text import decode, sanitize  # noqa: F401
from broadcast_chat.wire import (ServerLine, clock_stamp, fmt_action, fmt_error,  # noqa: F401
                                 fmt_message, fmt_notice, fmt_private_in, fmt_private_out,
                                 fold_notices, iso_time, parse_json_line, parse_server_line,
                                 summarize_notices)
