"""The code location: wires the Kommo assets, resources and IO manager together."""

import dagster as dg

defs = dg.Definitions()
