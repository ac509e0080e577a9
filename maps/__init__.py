"""harmspot.maps: folium maps, static figures and exports. Consumes geo.core.result.AnalysisResult only."""
