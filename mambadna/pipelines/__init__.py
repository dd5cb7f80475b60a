"""mambadna.pipelines"""
