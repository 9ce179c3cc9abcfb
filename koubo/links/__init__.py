"""Direct download links: HMAC-signed URLs to finished videos, served by a small aiohttp server.

The link server is separate from the web app so that downloads go through the kernel's sendfile
and need no login: the signature is the authorization.
"""

from koubo.links.signing import Keyring, LinkError, sign, verify

__all__ = ["Keyring", "LinkError", "sign", "verify"]
