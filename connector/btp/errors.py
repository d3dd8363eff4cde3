"""Errors of the BTP session and links.

BtpError
├── InvalidState        sans-I/O misuse: sending before the link is open, answering
│                       a request that is not waiting for an answer
└── LinkError           a request sent on a link got no usable answer
    ├── LinkDown        not connected, or the link closed before the answer came
    ├── LinkTimeout     no answer within the caller's timeout
    ├── BtpRefused      the peer answered with a BTP Error (code, message); also raised
    │                   by a `PeerHandler.handle_message` to answer with a BTP Error
    └── InvalidResponse the peer answered an ILP Prepare without an `ilp` entry
"""

from __future__ import annotations


class BtpError(Exception):
    pass


class InvalidState(BtpError):
    pass


class LinkError(BtpError):
    pass


class LinkDown(LinkError):
    pass


class LinkTimeout(LinkError):
    pass


class BtpRefused(LinkError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class InvalidResponse(LinkError):
    pass
