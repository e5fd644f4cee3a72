-- Per pipeline stage: entered, in it now, time spent, conversion (kommo_dagster.derived.stages).
CREATE OR REPLACE VIEW {view} AS
WITH stages AS (SELECT DISTINCT ON (pipeline_id, id) pipeline_id, id AS status_id, name, sort
    FROM {statuses} ORDER BY pipeline_id, id),
forward AS (
    SELECT pipeline_id, status_id,
        CASE WHEN status_id <> {won} THEN lead(status_id) OVER w END AS next_status_id,
        CASE WHEN status_id <> {won} THEN lead(sort) OVER w END AS next_sort
    FROM stages WHERE status_id <> {lost}
    WINDOW w AS (PARTITION BY pipeline_id ORDER BY sort, status_id)
),
entries AS (
    SELECT lead_id, pipeline_id, status_id, min(entered_at) AS first_entered
    FROM {stays} GROUP BY ALL
),
outcomes AS (
    SELECT e.pipeline_id, e.status_id, e.lead_id,
        bool_or(s.status_id <> {lost} AND t.sort >= f.next_sort) AS to_next,
        bool_or(s.status_id = {won}) AS won,
        bool_or(s.status_id = {lost}) AS lost
    FROM entries AS e
    LEFT JOIN forward AS f ON f.pipeline_id = e.pipeline_id AND f.status_id = e.status_id
    LEFT JOIN {stays} AS s ON s.lead_id = e.lead_id AND s.pipeline_id = e.pipeline_id
        AND s.entered_at >= e.first_entered
    LEFT JOIN stages AS t ON t.pipeline_id = s.pipeline_id AND t.status_id = s.status_id
    GROUP BY ALL
),
per_stage AS (
    SELECT pipeline_id, status_id, count(*) AS leads_entered,
        count(*) FILTER (WHERE to_next) AS leads_to_next,
        count(*) FILTER (WHERE won) AS won, count(*) FILTER (WHERE lost) AS lost
    FROM outcomes GROUP BY ALL
),
times AS (
    SELECT pipeline_id, status_id,
        quantile_cont(seconds_in_stage, 0.5) AS median_seconds_in_stage,
        quantile_cont(seconds_in_stage, 0.9) AS p90_seconds_in_stage
    FROM {stays} WHERE seconds_in_stage IS NOT NULL GROUP BY ALL
),
now AS (SELECT pipeline_id, status_id, count(*) AS leads_in_stage FROM {current} GROUP BY ALL)
SELECT st.pipeline_id, p.name AS pipeline_name, st.status_id, st.name AS status_name,
    CAST(st.sort AS BIGINT) AS sort,
    coalesce(ps.leads_entered, 0) AS leads_entered,
    coalesce(n.leads_in_stage, 0) AS leads_in_stage,
    CAST(t.median_seconds_in_stage AS DOUBLE) AS median_seconds_in_stage,
    CAST(t.p90_seconds_in_stage AS DOUBLE) AS p90_seconds_in_stage,
    f.next_status_id,
    CASE WHEN f.next_status_id IS NOT NULL THEN coalesce(ps.leads_to_next, 0) END
        AS leads_to_next,
    CASE WHEN f.next_status_id IS NOT NULL AND ps.leads_entered > 0
        THEN ps.leads_to_next / ps.leads_entered END AS conversion_to_next,
    coalesce(ps.won, 0) AS won, coalesce(ps.lost, 0) AS lost
FROM stages AS st
LEFT JOIN {pipelines} AS p ON p.id = st.pipeline_id
LEFT JOIN forward AS f USING (pipeline_id, status_id)
LEFT JOIN per_stage AS ps USING (pipeline_id, status_id)
LEFT JOIN times AS t USING (pipeline_id, status_id)
LEFT JOIN now AS n USING (pipeline_id, status_id)
ORDER BY st.pipeline_id, st.sort, st.status_id
