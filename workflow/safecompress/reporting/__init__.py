"""Layer 7, reporting: tables and figures built from the attack tables."""
