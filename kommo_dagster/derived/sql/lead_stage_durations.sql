-- Each stay of a lead in a pipeline stage (see kommo_dagster.derived.stages).
CREATE OR REPLACE VIEW {view} AS
WITH changes AS (SELECT DISTINCT ON (event_id) * FROM {changes} ORDER BY event_id),
ordered AS (
    SELECT *, row_number() OVER w AS n, lead(changed_at) OVER w AS next_changed_at
    FROM changes WINDOW w AS (PARTITION BY lead_id ORDER BY changed_at, event_id)
),
created AS (SELECT id, min(created_at) AS created_at FROM {leads} GROUP BY id),
stays AS (
    SELECT lead_id, pipeline_id_after AS pipeline_id, status_id_after AS status_id,
        changed_at AS entered_at, next_changed_at AS left_at
    FROM ordered
    UNION ALL
    SELECT o.lead_id, o.pipeline_id_before, o.status_id_before, c.created_at, o.changed_at
    FROM ordered AS o JOIN created AS c ON c.id = o.lead_id
    WHERE o.n = 1 AND c.created_at IS NOT NULL
    UNION ALL
    SELECT l.id, l.pipeline_id, l.status_id, l.created_at, NULL
    FROM {current} AS l ANTI JOIN changes AS x ON x.lead_id = l.id
)
SELECT CAST(lead_id AS BIGINT) AS lead_id, CAST(pipeline_id AS BIGINT) AS pipeline_id,
    CAST(status_id AS BIGINT) AS status_id, CAST(entered_at AS BIGINT) AS entered_at,
    CAST(left_at AS BIGINT) AS left_at, CAST(left_at - entered_at AS BIGINT) AS seconds_in_stage
FROM stays
