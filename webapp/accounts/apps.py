from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Accounts: the API tokens scripts authenticate with, their page and their DRF scheme."""

    name = "webapp.accounts"
    label = "accounts"
