-- The API key form's one-time key (issue 9, "a reload never re-submits"): a form
-- posted twice (reload, double click) creates one key; the second post is told so.
alter table api_keys add column form_key uuid;
create unique index api_keys_form_key_idx on api_keys (workspace_id, form_key)
    where form_key is not null;

-- The workspace's time zone (an IANA name PostgreSQL knows): its pages show dates and
-- cut days in it. Checked by the app against pg_timezone_names.
alter table workspaces add column time_zone text not null default 'UTC'
    check (length(time_zone) between 1 and 64);
