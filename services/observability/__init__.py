"""What an operator sees of a running signalbox: metrics, health, structured logs. Drivers call it; the core never."""
