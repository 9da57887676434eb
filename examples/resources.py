"""Resources: configured clients that assets receive, set up once per step and torn down after.

A resource is an ``fs.Resource`` subclass: a pydantic model whose fields are its configuration.
``setup()`` builds the object assets receive (a client, a connection); ``teardown(value)``
releases it, even when the step fails. Assets name the resources they use
(``@fs.asset(resources=["weather"])``) and find them in ``context.resources``.

A run can override a resource's configuration without touching code, through its run config:
``run_config={"resources": {"weather": {"city": "Oslo"}}}``. The override is JSON, stored with the
run (``flowstone_runs.config``), so a queued run's workers use exactly the same settings. Settings
left out (or ``None``) keep their configured values; an unknown setting or resource is refused.

This example runs in memory (no database). Run it with ``python examples/resources.py``.
"""

from __future__ import annotations

from typing import cast

import pydantic

import flowstone as fs

EVENTS: list[str] = []
"""What the resource did, in order (printed at the end, and checked by the example's test)."""


class WeatherClient:
    """A stand-in for an HTTP client: deterministic 'forecasts' instead of network calls."""

    def __init__(self, city: str, unit: str) -> None:
        self.city = city
        self.unit = unit
        self.closed = False

    def forecast(self) -> list[float]:
        if self.closed:
            raise RuntimeError("the client is closed")
        base = 10 + sum(map(ord, self.city)) % 15  # a fixed 'temperature' per city
        celsius = [float(base + delta) for delta in (0, 2, -1)]
        return celsius if self.unit == "C" else [round(c * 9 / 5 + 32, 1) for c in celsius]

    def close(self) -> None:
        self.closed = True


class WeatherApi(fs.Resource):
    """The resource: its fields are its settings (a misspelt setting is an error)."""

    city: str
    unit: str = "C"
    timeout_s: float = 5.0

    def setup(self) -> WeatherClient:
        EVENTS.append(f"setup {self.city} ({self.unit})")
        return WeatherClient(self.city, self.unit)

    def teardown(self, value: object) -> None:
        cast("WeatherClient", value).close()  # value is what setup() returned
        EVENTS.append(f"teardown {self.city}")


class Forecast(pydantic.BaseModel):
    """Outputs are stored with a typed JSON codec: JSON values, dates, Decimals, pydantic models..."""

    city: str
    unit: str
    temperatures: list[float]


@fs.asset(resources=["weather"])
def forecast(context: fs.AssetContext) -> Forecast:
    """Three days of forecast from the configured weather API."""
    client = cast("WeatherClient", context.resources["weather"])
    return Forecast(city=client.city, unit=client.unit, temperatures=client.forecast())


@fs.asset
def warmest(forecast: Forecast) -> str:
    """A one-line summary."""
    return f"{forecast.city}: up to {max(forecast.temperatures)} {forecast.unit}"


defs = fs.Definitions(
    assets=[forecast, warmest],
    resources={"weather": WeatherApi(city="Lisbon")},  # the configured default
)


def main() -> list[str]:
    """Run the pipeline with the default configuration, then with a per-run override."""
    EVENTS.clear()
    runtime = fs.FlowStone(defs, store="memory")

    default = runtime.materialize("warmest", with_upstream=True)
    print(f"default config: {default.value('warmest')}")

    # Per-run override: only the settings given change (unit keeps "C" unless overridden).
    override = {"resources": {"weather": {"city": "Oslo", "unit": "F"}}}
    oslo = runtime.materialize("warmest", with_upstream=True, run_config=override)
    print(f"run_config {override}: {oslo.value('warmest')}")

    # A misspelt setting is never silently ignored: the step fails (nothing is set up) and the
    # error names the known settings.
    try:
        runtime.materialize("forecast", run_config={"resources": {"weather": {"citty": "Rome"}}})
    except fs.ResourceError as exc:
        print(f"refused: {exc.message}")

    print("resource lifecycle:")
    for event in EVENTS:
        print(f"  {event}")
    return [str(default.value("warmest")), str(oslo.value("warmest"))]


if __name__ == "__main__":
    main()
