"""Username key: one account per username after NFKC, case folding and trimming

Revision ID: 0003
Revises: 0002


Usernames were unique by PostgreSQL's lower(), which differs from Python's and knows neither
Unicode forms nor white space: "ΟΔΥΣΣΕΑΣ" and "οδυσσεας", or "alice" and "alice ", could both
register, and "İzmir" could not sign in. The key is computed by the service's own function
(booking_service.usernames.username_key), for existing rows here and for new ones at
registration. If existing usernames share a key, the upgrade stops and lists them: rename all
but one of each group, then run it again.
"""
from collections.abc import Iterator
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

from booking_service.migrate import MigrationRefused
from booking_service.usernames import MAX_KEY_LENGTH, username_key

# revision identifiers, used by Alembic.
revision: str = '0003'
down_revision: Union[str, Sequence[str], None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

BATCH = 1000


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column('users', sa.Column('username_key', sa.String(length=MAX_KEY_LENGTH), nullable=True))
    connection = op.get_bind()
    for batch in _batches(connection):
        connection.execute(
            sa.text("UPDATE users SET username_key = :key WHERE id = :id"),
            [{"id": user_id, "key": username_key(username)} for user_id, username in batch],
        )
    _refuse_collisions(
        connection,
        "username_key",
        "the same username once normalized (Unicode NFKC, case folded, trimmed)",
        "upgrade",
    )
    op.alter_column('users', 'username_key', nullable=False)
    op.create_index('uq_users_username_key', 'users', ['username_key'], unique=True)
    op.drop_index('uq_users_username_lower', table_name='users')


def downgrade() -> None:
    """Downgrade schema."""
    _refuse_collisions(op.get_bind(), "lower(username)", "the same username in lower case", "downgrade")
    op.create_index('uq_users_username_lower', 'users', [sa.literal_column('lower(username)')], unique=True)
    op.drop_index('uq_users_username_key', table_name='users')
    op.drop_column('users', 'username_key')


def _batches(connection: sa.Connection) -> Iterator[list[tuple[int, str]]]:
    """(id, username) of every user, a batch at a time in id order."""
    after = 0
    while True:
        rows = connection.execute(
            sa.text("SELECT id, username FROM users WHERE id > :after ORDER BY id LIMIT :limit"),
            {"after": after, "limit": BATCH},
        ).all()
        if not rows:
            return
        yield [(row.id, row.username) for row in rows]
        after = rows[-1].id


def _refuse_collisions(connection: sa.Connection, key_sql: str, meaning: str, direction: str) -> None:
    """Stop, naming every group of usernames that would share one entry of the unique index."""
    groups = connection.execute(
        sa.text(
            f"SELECT array_agg(id ORDER BY id) AS ids, array_agg(username ORDER BY id) AS names "
            f"FROM users GROUP BY {key_sql} HAVING count(*) > 1 ORDER BY min(id)"
        )
    ).all()
    if not groups:
        return
    listed = "\n".join(
        "  " + ", ".join(f"{name!r} (id {user_id})" for user_id, name in zip(group.ids, group.names))
        for group in groups
    )
    raise MigrationRefused(
        f"Cannot {direction} to revision {revision if direction == 'upgrade' else down_revision}: "
        f"{len(groups)} group(s) of accounts have {meaning}, and usernames must be unique:\n"
        f"{listed}\n"
        "Rename all but one account of each group (for example: UPDATE users SET username = "
        "'<new name>' WHERE id = <id>;), then run the migration again. Nothing was changed."
    )
