-- One row per live lead with names, links and product amounts (kommo_dagster.derived.enriched).
CREATE OR REPLACE VIEW {view} AS
WITH elements AS (
    SELECT catalog_id, id AS element_id,
        from_json(coalesce(custom_fields_values, '[]')::JSON, '["JSON"]') AS list
    FROM {catalog_elements}
),
entries AS (
    -- n: the field's place in the element's list, which "first" means
    SELECT catalog_id, element_id, unnest(list) AS f, unnest(range(len(list))) AS n
    FROM elements
),
identified AS (
    -- the id's JSON extracted once: the integer rule reads it up to 7 times, and DuckDB
    -- repeats the rule where the window's partition and the filter below read field_id
    SELECT *, f -> '$.field_id' AS field_json FROM entries
),
fields AS (
    -- A field listed twice counts once, by its first entry (a product joins one price);
    -- entries without an integer id are no field listed twice, each one stays.
    SELECT catalog_id, element_id, f->>'field_type' AS field_type,
        {field_id} AS field_id,
        TRY_CAST(f->'values'->0->>'value' AS DOUBLE) AS value, n
    FROM identified
    QUALIFY field_id IS NULL
        OR row_number() OVER (PARTITION BY catalog_id, element_id, field_id ORDER BY n) = 1
),
default_prices AS (
    SELECT catalog_id, element_id, arg_min(value, n) AS value
    FROM fields WHERE field_type = 'price' GROUP BY ALL
),
products AS (
    SELECT p.lead_id, count(*) AS product_count,
        sum(p.quantity * coalesce(chosen.value, d.value)) AS product_amount
    FROM {lead_products} AS p
    LEFT JOIN fields AS chosen ON chosen.catalog_id = p.catalog_id
        AND chosen.element_id = p.element_id AND chosen.field_id = p.price_id
    LEFT JOIN default_prices AS d ON d.catalog_id = p.catalog_id AND d.element_id = p.element_id
    GROUP BY p.lead_id
),
main AS (
    SELECT lead_id, min(contact_id) AS contact_id FROM {lead_contacts}
    WHERE is_main GROUP BY lead_id
),
company AS (SELECT lead_id, min(company_id) AS company_id FROM {lead_companies} GROUP BY 1)
SELECT l.id AS lead_id, l.name AS lead_name, l.price, l.pipeline_id, pl.name AS pipeline_name,
    l.status_id, st.name AS status_name, main.contact_id AS main_contact_id,
    c.name AS main_contact_name, company.company_id, co.name AS company_name,
    coalesce(products.product_count, 0) AS product_count, products.product_amount,
    l.source_id, src.name AS source_name, l.created_at, l.closed_at
FROM {leads_live} AS l
LEFT JOIN {pipelines} AS pl ON pl.id = l.pipeline_id
LEFT JOIN {statuses} AS st ON st.pipeline_id = l.pipeline_id AND st.id = l.status_id
LEFT JOIN main ON main.lead_id = l.id
LEFT JOIN {contacts_live} AS c ON c.id = main.contact_id
LEFT JOIN company ON company.lead_id = l.id
LEFT JOIN {companies_live} AS co ON co.id = company.company_id
LEFT JOIN products ON products.lead_id = l.id
LEFT JOIN {lead_sources} AS src ON src.id = l.source_id
