"""camfx on a Ray cluster: `camfx cluster up | status | down`.

Each replica of the `CamfxNode` deployment is a whole camfx server (hub, models, its own peer
connections, media straight from its node); the `Ingress` deployment behind Ray Serve's HTTP
proxy takes the signalling and hands each request to a replica through a Serve handle whose
request router (`router.HeadroomRouter`) places new sessions on the replica with the most
headroom and sends every later request for a session to the replica that holds it.

    routes.py       which replica a request is for (new session, a session id, a stream name, all)
    router.py       the Serve request router: ranks replicas by what they report
    node_server.py  a camfx server on a thread of its own, reached over loopback
    node_stats.py   what a replica reports: sessions, names, busy time, diffusion work
    node.py         the replica deployment
    ingress.py      the HTTP ingress deployment
    merge.py        one cluster-wide /healthz, /metrics, /streams from the replicas' answers
    placement.py    the router's policy: replicas ranked for a request (no Ray in it)
    autoscale.py    the autoscaling policy on sessions per replica
    settings.py     what `camfx cluster up` sets, and each replica's ServerConfig
    app.py          settings -> the Serve application; up, status, down
    cli.py          `camfx cluster`

Ray is imported only by node, ingress and router, and lazily by app and cli; everything else is
plain Python, tested without a cluster.
"""
