"""schemathesis hooks for uncorreo's contract test (tests/it/api/contract.rs).

`POST /api/v1/mailboxes/{address}/messages` takes a raw RFC 5322 message
(`message/rfc822`), a media type schemathesis cannot generate by itself: this
gives it real messages (headers, blank line, body, CRLF or LF line ends,
8-bit bytes) and raw byte strings, so the send route is exercised too.
"""

import schemathesis
from hypothesis import strategies as st

_header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40
)


@st.composite
def _rfc822(draw):
    subject = draw(_header_text)
    body = draw(st.binary(max_size=256))
    line_end = draw(st.sampled_from([b"\r\n", b"\n"]))
    return (
        b"From: contract@example.com" + line_end
        + b"Subject: " + subject.encode() + line_end
        + line_end + body
    )


schemathesis.openapi.media_type(
    "message/rfc822", st.one_of(_rfc822(), st.binary(max_size=128))
)
