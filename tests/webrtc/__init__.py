"""Real WebRTC peers against a real server on loopback."""
