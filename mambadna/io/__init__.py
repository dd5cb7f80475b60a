"""mambadna.io"""
