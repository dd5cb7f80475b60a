"""mambadna.model"""
