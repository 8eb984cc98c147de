from recbole_tema.data.domains import ItemDomains, has_domains

__all__ = ["ItemDomains", "has_domains"]
