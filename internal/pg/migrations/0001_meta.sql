-- jetchat's own facts about a deployment (first start, schema owner).
CREATE TABLE jetchat_meta (
    key        text PRIMARY KEY,
    value      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO jetchat_meta (key, value) VALUES ('created_at', now()::text);
