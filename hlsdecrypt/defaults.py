"""The defaults that the command line shows in its help and the library uses.

Here, in a module that imports nothing, so that building the command line's parser (all that
``hlsdecrypt --version`` and ``--help`` do) does not import the modules that use them.
"""

#: The live service's key API, and the region its requests are signed for.
DEFAULT_ENDPOINT = "https://live.volcengineapi.com"
DEFAULT_REGION = "cn-north-1"
#: Where keys come from after the key, keys file and key cache given (see ``keys.key_chain``).
KEY_SOURCES = ("auto", "api", "uri", "none")
#: A whole HTTP request may take this long, however steadily a server trickles.
DEADLINE = 300.0
#: Parallel fetches for http(s) segments: enough to hide a server's latency, and no more
#: connections than a browser opens to one host. Local files stream on one thread (plus the
#: writer's): more would only hold more segments in memory.
HTTP_JOBS = 6
#: How ``encrypt`` chooses IVs, and the key URIs it writes by default.
IV_MODES = ("implicit", "explicit", "zero")
DEFAULT_KEY_URI = "key{n}.bin"
#: Where many machines keep keys and the API's rate limit when --key-store is not given.
KEY_STORE_ENV = "HLSDECRYPT_KEY_STORE"
#: The shells ``hlsdecrypt completion`` writes for.
SHELLS = ("bash", "zsh", "fish")
