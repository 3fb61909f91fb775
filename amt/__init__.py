"""Human studies (Mechanical Turk comparison HITs and a local lab mode): not built yet (issue 4)."""
