"""The product catalog: which store products grant which entitlements and how many credits."""
