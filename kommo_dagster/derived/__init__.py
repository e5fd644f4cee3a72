"""Analytics-ready tables and views computed inside DuckDB, with no request to Kommo.

* ``<entity>_custom_field_values`` (`long_values`): one typed-as-text row per custom-field value
  of each stored version of a lead, contact or company, sliced exactly as its parent.
* ``<stream>_wide`` views (`wide`): the live records with one typed column per field definition.
* ``lead_status_changes`` (`stages`): one row per ``lead_status_changed`` event, sliced as the
  events; the ``lead_stage_durations`` and ``pipeline_funnel`` views over it.
* ``chat_response_times`` (`chats`), ``calls`` (`calls`), ``manager_activity_daily``
  (`manager_activity`) and the ``response_time_by_manager`` view: rebuilt whole from everything
  extracted, each write planned from what the warehouse holds (`activity`).

Each is one declaration in `declaration` (columns from the contract's entries with
``derived_from``; key, SQL, checks and what rebuilds a view from the code); writes replace a
slice, or the whole table, in one transaction (`write`). The Dagster side
(`kommo_dagster.orchestration.derived_selection`, `derived_assets`, `derived_views`,
`derived_checks`) makes them assets (partitioned like their parents, or not) and data checks;
after any write, the table registry (`kommo_dagster.warehouse.registry`) rebuilds the views that
follow it, ``kommo_all`` views included, in the same transaction.
"""
