"""mambadna.data"""
