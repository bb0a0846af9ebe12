"""`boss ui`: a live dashboard of studies, for run folders on this machine and studies on a cluster.

`sources` reads studies (a run folder as `boss run` writes it, or BossStudy objects, their
history ConfigMaps and pod logs through the API server with the user's own kubeconfig);
`server` serves them as JSON plus Server-Sent Events of what changed, and the page in
`static/` (vanilla JS and SVG, shipped with the package: no CDN, no build step) draws them.
"""

from .server import serve

__all__ = ["serve"]
