-- Groups, their current members and the history of past memberships.
--
-- Membership positions are sequences of the message log (stream JETCHAT_MSGS):
-- every membership change appends a notice to the inbox (chat.u.<user>) of
-- each user it adds or removes, and the stream sequence of that user's notice
-- is stored here as joined_seq or left_seq. A user was a member at log position S when joined_seq <= S and
-- (it is still a member, or left_seq > S).
CREATE TABLE groups (
    id         text PRIMARY KEY,
    name       text NOT NULL,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Current members. A group with no rows here has no members and is visible
-- to nobody; it stays for the history of its messages.
CREATE TABLE group_members (
    group_id   text NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    user_id    text NOT NULL,
    role       text NOT NULL CHECK (role IN ('admin', 'member')),
    joined_at  timestamptz NOT NULL DEFAULT now(),
    joined_seq bigint NOT NULL CHECK (joined_seq > 0),
    PRIMARY KEY (group_id, user_id)
);

-- The groups of a user (GET /v1/groups, catch-up of a connecting device).
CREATE INDEX group_members_user ON group_members (user_id);

-- Past membership intervals [joined_seq, left_seq) of users who left or were
-- removed. A user who comes back gets a new row in group_members. (No CHECK
-- that left_seq > joined_seq: should the stream ever be recreated, its
-- sequences restart, and removals must keep working.)
CREATE TABLE group_member_history (
    group_id   text NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    user_id    text NOT NULL,
    joined_seq bigint NOT NULL,
    left_seq   bigint NOT NULL,
    left_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, user_id, joined_seq)
);

-- A user's past groups whose interval ends after a point of the log.
CREATE INDEX group_member_history_user ON group_member_history (user_id, left_seq);
