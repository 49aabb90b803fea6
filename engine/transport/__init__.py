"""How streams reach the outside: HTTP, signalling, peer sessions, and the limits an exposed server needs."""
