"""``arkor-ops studio``: a local web app over any backend's runs (Arkor Studio's counterpart).

Pages: the runs list, a run's live loss chart, event log, committed checkpoints and a Cancel
button, and a playground that chats with a live run's checkpoints through ``infer()``. The page
is one static HTML/JS/CSS bundle shipped in the package (``static/``): nothing is fetched from
the network, and the chart is plain SVG drawn by our script.

The server binds 127.0.0.1 only and admits one browser session: the token minted at start is in
the URL the command prints; the first page load turns it into an ``HttpOnly`` cookie and
redirects to a URL without it (:mod:`.access`). It talks to the runs only through the
:class:`~arkor_ops.backends.base.Backend` interface (:mod:`.api`), so it works for the local
and the Kubernetes backend alike. Needs the ``studio`` extra (Starlette, uvicorn).
"""
