"""uvicorn's httptools protocol with each answer sent in one write (issue 19.3).

uvicorn writes an answer's head and body with two writes, two system calls on uvloop; this protocol gives uvicorn
forkcast_contract.write_coalescing's transport, which joins the writes of one loop iteration (the why and the
measured figure are there). The gateway's ``HeaderBoundedProtocol`` does the same.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from forkcast_contract.write_coalescing import CoalescingWrites


class CoalescingProtocol(CoalescingWrites, HttpToolsProtocol):
    """``uvicorn.run(app, http=CoalescingProtocol)``: uvicorn's httptools protocol, each answer in one write."""
