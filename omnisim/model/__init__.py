"""The simulated world: population, behaviour, channels, fatigue, scenarios, engines. No policy code here."""
