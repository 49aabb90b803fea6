"""No peer connection, no browser, no cluster: the quick subset (`pytest -m unit`)."""
