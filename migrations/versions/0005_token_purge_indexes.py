"""Token purge indexes: find expired and revoked tokens and stale login devices by index

Revision ID: 0005
Revises: 0004


flask purge-tokens deletes in batches of rows found through these indexes; without them each
batch would scan the whole table. Built CONCURRENTLY, outside the migration's transaction, so
that sign-ins (which insert tokens) go on while a large table is indexed.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision: str = '0005'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.get_context().autocommit_block():
        op.create_index('ix_api_tokens_expires_at', 'api_tokens', ['expires_at'], unique=False, postgresql_concurrently=True, if_not_exists=True)
        op.create_index('ix_api_tokens_revoked_at', 'api_tokens', ['revoked_at'], unique=False, postgresql_where=sa.text('revoked_at IS NOT NULL'), postgresql_concurrently=True, if_not_exists=True)
        op.create_index('ix_login_devices_last_used_at', 'login_devices', ['last_used_at'], unique=False, postgresql_concurrently=True, if_not_exists=True)


def downgrade() -> None:
    """Downgrade schema."""
    with op.get_context().autocommit_block():
        op.drop_index('ix_login_devices_last_used_at', table_name='login_devices', postgresql_concurrently=True, if_exists=True)
        op.drop_index('ix_api_tokens_revoked_at', table_name='api_tokens', postgresql_concurrently=True, if_exists=True)
        op.drop_index('ix_api_tokens_expires_at', table_name='api_tokens', postgresql_concurrently=True, if_exists=True)
