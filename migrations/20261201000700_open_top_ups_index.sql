-- Reconciling abandoned top-ups walks the open ones least recently looked at first.
create index top_ups_open_idx on top_ups (updated_at) where status = 'open';
